// NUMA topology and placement (part 4).
