"""Run every benchmark in bench/."""

from bench import ingest, monitor, order_path, research, sim

if __name__ == "__main__":
    ingest.main()
    print()
    sim.main()
    print()
    order_path.main([])
    print()
    research.main()
    print()
    monitor.main([])
