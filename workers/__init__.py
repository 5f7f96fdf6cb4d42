"""Stream processing: pure stages (stages, spikes) and the I/O edge (worker loop, sinks, delivery)."""
