"""Run every benchmark in bench/."""

from bench import ingest, order_path, sim

if __name__ == "__main__":
    ingest.main()
    print()
    sim.main()
    print()
    order_path.main([])
