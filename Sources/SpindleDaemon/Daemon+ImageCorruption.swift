import BlockGraph
import ControlThread
import Monitor

extension Daemon {
    /// BLOCK_IMAGE_CORRUPTED with QEMU's members, once per node whose image was found corrupt.
    func watchImageCorruption() {
        graph.onImageCorrupted = { [weak self] corruption in
            var data = JSONObject([
                "device": .string(corruption.device), "node-name": .string(corruption.node.rawValue),
                "msg": .string(corruption.message), "fatal": .bool(corruption.fatal),
            ])
            if let offset = corruption.offset { data["offset"] = .integer(offset) }
            if let size = corruption.size { data["size"] = .integer(size) }
            self?.emit(event: "BLOCK_IMAGE_CORRUPTED", data: data)
        }
    }
}
