"""Further commands of ``fedshield``, one module each, registered by ``fedshield.cli``.

``COMMAND_GROUPS``: name -> module exposing a ``typer.Typer`` named ``app`` (``fedshield
ledger verify``); ``COMMANDS``: name -> module exposing a function named ``command``
(``fedshield report RUN``). Keep the modules' top-level imports light: heavy imports go
inside the command functions, so ``fedshield --help`` stays fast.
"""

COMMAND_GROUPS: dict[str, str] = {
    "audit": "fedshield.commands.audit",
    "ledger": "fedshield.commands.ledger",
}
COMMANDS: dict[str, str] = {
    "report": "fedshield.commands.report",
    "certs": "fedshield.commands.certs",
    "partition": "fedshield.commands.partition",
    "sweep": "fedshield.commands.sweep",
}
