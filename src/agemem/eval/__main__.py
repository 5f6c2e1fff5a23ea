"""`python -m agemem.eval eval|report ...`: the same commands as `agemem eval|report`."""

import typer

from agemem.eval.cli import eval_command, report_command

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
app.command("eval")(eval_command)
app.command("report")(report_command)

if __name__ == "__main__":
    app()
