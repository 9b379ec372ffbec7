import BlockCommon
import ControlThread
import CSpindle
import Glibc

/// Connecting to a Ceph cluster and opening an image, in QEMU's order: rados_create(user),
/// the conf file, timeouts, mon_host from `server`, the key, auth_client_required, connect,
/// the pool's ioctx, the namespace, rbd_open. Runs on the control thread, which is never
/// pinned: librados' threads inherit the CPU affinity of the thread that connects, and must
/// not crowd one IOThread's CPU. Every failure undoes what was done (rados_shutdown last)
/// and says in one line which node failed and why.
@ControlActor
struct RbdConnection {
    let cluster: UnsafeMutableRawPointer
    let ioctx: UnsafeMutableRawPointer
    let image: UnsafeMutableRawPointer

    /// Bounded waits: a monitor that does not answer, or a wrong key, fails the open within
    /// seconds instead of hanging the control thread. OSD operations get longer (an OSD that
    /// restarts should delay requests, not fail them), but still a bound for the open.
    static let mountTimeoutSeconds = "5"
    static let monitorOperationTimeoutSeconds = "5"
    static let osdOperationTimeoutSeconds = "30"

    static func open(_ options: RbdOptions, node: NodeName) throws(BlockError) -> RbdConnection {
        func failure(_ rc: Int32, _ what: String) -> BlockError {
            BlockError(errno: -rc, "node '\(node)': \(what): \(String(cString: strerror(-rc)))")
        }
        var clusterHandle: spindle_rados_t? = nil
        let created = options.user.map { spindle_rados_create(&clusterHandle, $0) } ?? spindle_rados_create(&clusterHandle, nil)
        guard created == 0, let cluster = clusterHandle else { throw failure(created, "cannot create a Ceph client") }
        do throws(BlockError) {
            if let conf = options.conf {
                let rc = spindle_rados_conf_read_file(cluster, conf)
                if rc < 0 { throw failure(rc, "cannot read Ceph configuration '\(conf)'") }
            } else {
                _ = spindle_rados_conf_read_file(cluster, nil)  // no default ceph.conf is fine, as in QEMU
            }
            try set(cluster, "client_mount_timeout", mountTimeoutSeconds, node: node)
            try set(cluster, "rados_mon_op_timeout", monitorOperationTimeoutSeconds, node: node)
            try set(cluster, "rados_osd_op_timeout", osdOperationTimeoutSeconds, node: node)
            // Breaking a dead predecessor's lock (RbdStaleLockTakeover) must also fence it off.
            try set(cluster, "rbd_blocklist_on_break_lock", "true", node: node)
            if !options.servers.isEmpty {
                let hosts = options.servers.map { $0.host.contains(":") ? "[\($0.host)]:\($0.port)" : "\($0.host):\($0.port)" }
                try set(cluster, "mon_host", hosts.joined(separator: ";"), node: node)
            }
            if let secret = options.keySecret {
                guard let bytes = SecretStore.shared.bytes(secret) else {
                    throw BlockError(errno: ENOENT, "node '\(node)': secret '\(secret)' does not exist (add --object secret,id=\(secret),file=KEYFILE,format=base64 first)")
                }
                // librados takes the key in base64; the value is never logged.
                try set(cluster, "key", Base64.encode(bytes), node: node, secret: true)
            }
            if !options.authClientRequired.isEmpty {
                try set(cluster, "auth_client_required", options.authClientRequired.joined(separator: ";"), node: node)
            }
            let rc = spindle_rados_connect(cluster)
            guard rc == 0 else { throw connectFailure(rc, options: options, node: node) }
            var ioctxHandle: spindle_rados_ioctx_t? = nil
            let ioctxRC = spindle_rados_ioctx_create(cluster, options.pool, &ioctxHandle)
            guard ioctxRC == 0, let ioctx = ioctxHandle else {
                if ioctxRC == -ENOENT { throw BlockError(errno: ENOENT, "node '\(node)': pool '\(options.pool)' does not exist in the Ceph cluster") }
                throw failure(ioctxRC, "cannot open pool '\(options.pool)'")
            }
            if let namespace = options.namespace { spindle_rados_ioctx_set_namespace(ioctx, namespace) }
            var imageHandle: spindle_rbd_image_t? = nil
            let openRC = spindle_rbd_open(ioctx, options.image, &imageHandle, options.snapshot, options.readOnly ? 1 : 0)
            guard openRC == 0, let image = imageHandle else {
                spindle_rados_ioctx_destroy(ioctx)
                if openRC == -ENOENT {
                    let what = options.snapshot.map { "image '\(options.displayName)' (or its snapshot '\($0)')" } ?? "image '\(options.displayName)'"
                    throw BlockError(errno: ENOENT, "node '\(node)': \(what) does not exist (create it with rbd create, or check pool/namespace/image)")
                }
                throw failure(openRC, "cannot open image '\(options.displayName)'")
            }
            return RbdConnection(cluster: cluster, ioctx: ioctx, image: image)
        } catch {
            spindle_rados_shutdown(cluster)
            throw error
        }
    }

    /// Closes the image, the pool's ioctx and the cluster connection, in that order.
    func close() {
        _ = spindle_rbd_close(image)
        spindle_rados_ioctx_destroy(ioctx)
        spindle_rados_shutdown(cluster)
    }

    private static func set(_ cluster: UnsafeMutableRawPointer, _ option: String, _ value: String, node: NodeName,
                            secret: Bool = false) throws(BlockError) {
        let rc = spindle_rados_conf_set(cluster, option, value)
        guard rc == 0 else {
            let shown = secret ? "(the key from key-secret)" : "'\(value)'"
            throw BlockError(errno: -rc, "node '\(node)': Ceph rejects \(option) \(shown): \(String(cString: strerror(-rc)))")
        }
    }

    private static func connectFailure(_ rc: Int32, options: RbdOptions, node: NodeName) -> BlockError {
        let user = "client.\(options.user ?? "admin")"
        let cause: String
        switch -rc {
        case EACCES, EPERM:
            cause = "authentication as \(user) failed (wrong key, or key-secret/keyring for another user)"
        case ETIMEDOUT:
            switch RbdMonitorProbe.anyListening(options.servers) {
            case true?:
                cause = "the monitor answers but did not let \(user) in within \(mountTimeoutSeconds) s (wrong key in key-secret, or a key for another user?)"
            case false?:
                cause = "no monitor answered within \(mountTimeoutSeconds) s at \(options.servers.map { "\($0.host):\($0.port)" }.joined(separator: ", ")) (check server.N.host/port, and that the monitors run)"
            case nil:
                cause = "no monitor let \(user) in within \(mountTimeoutSeconds) s (check mon_host in the conf and that the monitors run, and the key)"
            }
        case ENOENT:
            cause = "no monitor address or no key for \(user) (give server.N.host/port or conf=, and key-secret= or a keyring in the conf)"
        default:
            cause = String(cString: strerror(-rc))
        }
        return BlockError(errno: -rc, "node '\(node)': cannot connect to the Ceph cluster: \(cause)")
    }
}
