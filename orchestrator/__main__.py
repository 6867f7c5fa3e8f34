import sys

from .cli import main

if __name__ == "__main__":
    args = sys.argv[1:] or ["serve"]
    sys.exit(main(args))
