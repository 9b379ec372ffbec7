extension QMPError {
    /// A GenericError, the class of nearly every QMP failure.
    public init(_ desc: String) { self.init(.genericError, desc) }
}
