"""`python -m aikeys.mockupstream` = `aikeys mock-upstream`."""

from aikeys.cli.main import mock_upstream

mock_upstream(prog_name="aikeys mock-upstream")
