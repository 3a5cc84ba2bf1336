"""``python -m ftprobe`` works like ``ftprobe``."""

from ftprobe.cli import main

if __name__ == "__main__":
    main()
