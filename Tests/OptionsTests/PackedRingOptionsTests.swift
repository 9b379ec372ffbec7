import BlockCommon
import SpindleOptions
import Testing

/// The export key `packed-ring` (offer VIRTIO_F_RING_PACKED), default off.
@Suite struct PackedRingOptionsTests {
    @Test func packedRingDefaultsOff() throws {
        #expect(try configuration(nullNode + exportArgs()).exports.first?.packedRing == false)
        #expect(try configuration(nullNode + exportArgs(",packed-ring=on")).exports.first?.packedRing == true)
        let qmp = try exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"), "packed-ring": .bool(true),
            "addr": .object(OptionObject(["type": .string("unix"), "path": .string("/tmp/e0.sock")])),
        ]))
        #expect(qmp.packedRing)
        expectError(nullNode + exportArgs(",packed-ring=yes please"), "invalid boolean 'yes please' for 'packed-ring'")
        #expect(spindleHelpText.contains("packed-ring=on|off"))
    }
}
