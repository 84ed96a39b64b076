"""Run every benchmark in bench/."""

from bench import ingest

if __name__ == "__main__":
    ingest.main()
