import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Qcow2Format

/// What blockdev-mirror sync=top copies: the guest ranges a qcow2 node's own image holds
/// (data, compressed or zero clusters; zero clusters hide the backing data, so they count).
/// Read from the tables on disk with pread on the control thread, before the job starts.
extension BlockGraph {
    /// The node's backing file (as opened) if it is a qcow2 node over a backing chain.
    public func backingFile(of name: NodeName) -> String? {
        guard let driver = nodes[name]?.driver as? Qcow2Driver else { return nil }
        return driver.backingDisplay?.filename
    }

    /// The ranges (cluster-aligned, merged, in order) a qcow2 node's top image maps; nil if
    /// the node is not qcow2.
    public func topLayerAllocation(of name: NodeName) throws(BlockError) -> [Range<UInt64>]? {
        guard let driver = nodes[name]?.driver as? Qcow2Driver else { return nil }
        return try driver.topLayerAllocation()
    }
}

extension Qcow2Driver {
    func topLayerAllocation() throws(BlockError) -> [Range<UInt64>] {
        let layout = image.layout
        let reader = Qcow2ImageReader(fd: image.fd, fileLength: layout.fileLength, subject: "qcow2 node '\(node)' ('\(filename)')")
        let l1 = try reader.pread(count: Int(layout.l1Bytes), at: layout.l1Offset, what: "the L1 table")
        let clusterSize = layout.clusterSize
        let entriesPerTable = Int(1 << UInt64(layout.l2Bits))
        var ranges: [Range<UInt64>] = []
        func add(_ start: UInt64, _ count: UInt64) {
            let end = min(start + count, layout.virtualSize)
            guard start < end else { return }
            if let last = ranges.last, last.upperBound == start {
                ranges[ranges.count - 1] = last.lowerBound..<end
            } else {
                ranges.append(start..<end)
            }
        }
        for l1Index in 0..<min(Int(layout.l1Size), Int(layout.l2TablesNeeded)) {
            let raw = Self.bigEndian(l1, at: l1Index * 8)
            let tableStart = UInt64(l1Index) * layout.bytesPerL2Table
            guard let tableOffset = Qcow2Entries.l2TableOffset(l1Entry: raw, clusterBits: layout.clusterBits),
                  tableOffset == 0 || layout.checkL2Table(tableOffset) == nil else {
                add(tableStart, layout.bytesPerL2Table)  // corrupt: let the copy's reads meet it
                continue
            }
            if tableOffset == 0 { continue }
            let table = try reader.pread(count: Int(clusterSize), at: tableOffset, what: "the L2 table of L1 entry \(l1Index)")
            for index in 0..<entriesPerTable {
                let entry = Qcow2Entries.decodeL2(Self.bigEndian(table, at: index * 8), clusterBits: layout.clusterBits)
                if entry != .unallocated { add(tableStart + UInt64(index) * clusterSize, clusterSize) }
            }
        }
        return ranges
    }

    private static func bigEndian(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for byte in 0..<8 { value = value << 8 | UInt64(bytes[offset + byte]) }
        return value
    }
}
