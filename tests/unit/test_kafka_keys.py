"""The explicit partitioning of keyed events: stable, and spread over every partition."""

from workers.ingest.kafka_io import key_partition


def test_a_key_always_goes_to_the_same_partition_and_keys_spread_over_all() -> None:
    assert {key_partition("topic:Macro", 4) for _ in range(3)} == {key_partition("topic:Macro", 4)}
    assert key_partition("topic:Macro", 4) == 0  # CRC-32: the same on every machine and Python version
    assert len({key_partition(f"ticker:{i}", 4) for i in range(100)}) == 4
