extension VirtqueueSlots {
    /// The slot `take(head:)` will hand out next (there must be a free one): the server walks
    /// a request into its chain before it takes it.
    @inlinable @inline(__always)
    var nextFree: Int { Int(freeStack[freeCount - 1]) }
}
