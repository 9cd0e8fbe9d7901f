"""`python -m aikeys_dev.mockupstream` = `aikeys-dev mock-upstream`."""

from aikeys_dev.cli import mock_upstream

mock_upstream(prog_name="aikeys-dev mock-upstream")
