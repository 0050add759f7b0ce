"""``python -m authserver``: the ``authserver`` command."""

from authserver.cli import main

main(prog_name="authserver")
