/// `driver=rbd`: a Ceph RBD image, with qemu-storage-daemon's option names.
public struct RbdOptions: Sendable, Equatable {
    public var pool: String
    public var image: String
    public var namespace: String? = nil
    /// Opens the image as of this snapshot, read-only.
    public var snapshot: String? = nil
    /// A ceph.conf to read (nil: librados' default search, whose absence is not an error).
    public var conf: String? = nil
    /// The cephx user, without "client." (librados' default: admin).
    public var user: String? = nil
    /// The id of a `secret` object holding the user's key.
    public var keySecret: String? = nil
    /// Monitors (`server.N.host`/`server.N.port`), joined into librados' mon_host.
    public var servers: [RbdServer] = []
    /// `auth-client-required` (cephx, none), joined into librados' auth_client_required.
    public var authClientRequired: [String] = []
    public var readOnly: Bool = false
    /// `discard=unmap|ignore`: whether guest discards reach the image (QEMU's default: ignore).
    public var discardUnmap: Bool = false

    public init(pool: String, image: String) {
        self.pool = pool
        self.image = image
    }

    /// What query-named-block-nodes shows as the file, in QEMU's pseudo-filename shape.
    public var displayName: String {
        var name = "rbd:\(pool)/"
        if let namespace { name += "\(namespace)/" }
        name += image
        if let snapshot { name += "@\(snapshot)" }
        return name
    }
}

public struct RbdServer: Sendable, Equatable {
    public var host: String
    public var port: String
    public init(host: String, port: String) {
        self.host = host
        self.port = port
    }
}
