/// What the frontend asks of the backend and how it lays out its request slots.
public struct FrontendOptions: Sendable, Hashable {
    /// Virtqueues to set up (needs the MQ feature and protocol feature above 1).
    public var queueCount: Int
    /// Requests each queue can have in flight; one preallocated slot each.
    public var slotsPerQueue: Int
    /// Largest data transfer of one request, in bytes (each slot gets a buffer this big).
    public var maxRequestBytes: Int
    /// Ring size; nil picks the smallest power of two that holds every slot's chain.
    public var queueSize: Int?
    /// Negotiate VIRTIO_F_RING_EVENT_IDX (fails if the backend does not offer it).
    public var eventIndex: Bool
    /// Use indirect descriptor tables (fails if the backend does not offer them).
    public var indirectDescriptors: Bool
    /// How long to wait for each reply from the backend.
    public var replyTimeoutMilliseconds: Int32
    /// Share an inflight buffer (INFLIGHT_SHMFD: GET_INFLIGHT_FD then SET_INFLIGHT_FD), as
    /// QEMU's vhost-user-blk does; fails if the backend does not offer it.
    public var inflightTracking = false
    /// Set every ring up with SET_VRING_KICK's NOFD flag (no kick eventfd sent): the backend
    /// must poll the rings. Kicks the frontend writes then reach nobody.
    public var kicklessRings = false
    /// Dirty logging for migration (LOG_SHMFD negotiated, VHOST_F_LOG_ALL required); see
    /// `DirtyLogging`.
    public var dirtyLogging = DirtyLogging.off
    /// Split (default) or packed rings; packed needs VIRTIO_F_RING_PACKED from the backend.
    public var ringLayout = RingLayout.split
    /// Negotiate VIRTIO_BLK_F_DISCARD and WRITE_ZEROES (fails if the backend lacks them).
    public var discardAndWriteZeroes = false

    public init(queueCount: Int = 1, slotsPerQueue: Int = 32, maxRequestBytes: Int = 4096,
                queueSize: Int? = nil, eventIndex: Bool = true, indirectDescriptors: Bool = false,
                replyTimeoutMilliseconds: Int32 = 5000) {
        self.queueCount = queueCount
        self.slotsPerQueue = slotsPerQueue
        self.maxRequestBytes = maxRequestBytes
        self.queueSize = queueSize
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
        self.replyTimeoutMilliseconds = replyTimeoutMilliseconds
    }

    /// Descriptors one request chain takes in the ring: one (indirect) or three.
    public var ringDescriptorsPerSlot: Int { indirectDescriptors ? 1 : 3 }

    /// The ring size used: the explicit one, or the smallest power of two ≥ 64 that fits.
    /// (A packed ring may have any size; split rings need a power of two.)
    public var effectiveQueueSize: Int {
        if let queueSize { return queueSize }
        var size = 64
        while size < slotsPerQueue * ringDescriptorsPerSlot { size *= 2 }
        return size
    }

    /// Checks the numbers before anything is allocated.
    public func validate() throws(FrontendError) {
        guard queueCount >= 1, queueCount <= 256 else { throw FrontendError("queue count \(queueCount) must be between 1 and 256") }
        guard slotsPerQueue >= 1, slotsPerQueue <= 4096 else { throw FrontendError("queue depth \(slotsPerQueue) must be between 1 and 4096") }
        guard maxRequestBytes >= 512, maxRequestBytes <= 64 << 20, maxRequestBytes % 512 == 0 else {
            throw FrontendError("block size \(maxRequestBytes) must be a multiple of 512 between 512 and 64 MiB")
        }
        let size = effectiveQueueSize
        if ringLayout == .packed {
            guard size >= 1, size <= 32768 else { throw FrontendError("packed queue size \(size) must be between 1 and 32768") }
        } else {
            guard size >= 1, size <= 32768, size & (size - 1) == 0 else {
                throw FrontendError("queue size \(size) must be a power of two up to 32768")
            }
        }
        guard slotsPerQueue * ringDescriptorsPerSlot <= size else {
            throw FrontendError("queue size \(size) cannot hold \(slotsPerQueue) requests of \(ringDescriptorsPerSlot) descriptors")
        }
    }
}

/// The virtqueue layout the frontend drives.
public enum RingLayout: String, Sendable, Hashable {
    /// Descriptor table, avail ring, used ring (virtio 1.0).
    case split
    /// One descriptor ring plus two event suppression areas (virtio 1.1, VIRTIO_F_RING_PACKED).
    case packed
}

/// Whether and when the frontend logs dirty pages, as QEMU does for a migration.
public enum DirtyLogging: Sendable, Hashable {
    /// No logging: LOG_SHMFD is not negotiated and `startDirtyLog` fails.
    case off
    /// Available: LOG_SHMFD negotiated, VHOST_F_LOG_ALL offered; `startDirtyLog()` starts it
    /// while the rings run (QEMU when a migration starts).
    case onRequest
    /// On from device start (QEMU starting a device while a migration runs): SET_FEATURES
    /// carries LOG_ALL, SET_VRING_ADDR the log flag, and SET_LOG_BASE follows the rings'
    /// setup, before they are enabled.
    case fromDeviceStart
}
