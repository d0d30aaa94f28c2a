"""Entry point for `python -m fleetrun`."""

from fleetrun.cli import main

if __name__ == "__main__":
    main()
