"""``python -m flowhooks``: the same command line as the ``flowhooks`` console script."""

from flowhooks._cli import main

if __name__ == "__main__":
    main()
