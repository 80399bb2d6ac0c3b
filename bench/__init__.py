"""`make bench`: silver's throughput against the model's limit and the seed notebook's approach,
the chain's overhead, the incremental cost and the memory peaks (docs/benchmarks.md).

`bench.run` prepares the images and runs each measurement of `bench.measure` in its own process,
so memory and JIT state never leak from one measurement into the next.
"""
