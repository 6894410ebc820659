"""``python -m embedgen``."""

from embedgen.cli import main

main()
