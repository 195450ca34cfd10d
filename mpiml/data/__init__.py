"""Data readers, byte-range sharding, id maps, partitioning and synthetic data."""

from mpiml.data.loader import load_shard, split_holdout
from mpiml.data.shard import FORMATS, Shard, read_shard

__all__ = ["FORMATS", "Shard", "load_shard", "read_shard", "split_holdout"]
