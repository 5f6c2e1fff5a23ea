"""Modules that need the optional verl environment (`.venv/verl`, scripts/setup.sh) are not
collected (doctests) where verl is not installed; tests/test_verl_contract.py runs them there."""

import importlib.util

collect_ignore = (
    []
    if importlib.util.find_spec("verl")
    else ["src/agemem/integrations/verl.py", "tests/verl_contract.py"]
)
