"""``python -m memlora.cli``: the same as the ``memlora`` command."""
from . import main

main()
