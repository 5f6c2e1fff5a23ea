"""Adapters to other training frameworks, each an optional extra (`agemem.integrations.verl`:
`pip install "agemem[verl]"`)."""
