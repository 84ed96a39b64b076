"""Run every benchmark in bench/."""

from bench import ingest, sim

if __name__ == "__main__":
    ingest.main()
    print()
    sim.main()
