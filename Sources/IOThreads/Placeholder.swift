// IOThreads
