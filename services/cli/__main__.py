"""`python -m dreammask.services.cli ...` runs the `dreammask` command."""

from .main import app

app()
