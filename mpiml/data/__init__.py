"""Data readers, byte-range sharding, id maps, partitioning and synthetic data."""
