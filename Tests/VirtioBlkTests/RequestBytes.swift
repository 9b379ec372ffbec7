/// Request bytes as a guest driver lays them out (little-endian).
func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

/// A request header: type, reserved, sector.
func header(_ type: UInt32, sector: UInt64 = 0) -> [UInt8] {
    littleEndianBytes(type) + littleEndianBytes(UInt32(0)) + littleEndianBytes(sector)
}

func segment(_ sector: UInt64, _ count: UInt32, flags: UInt32 = 0) -> [UInt8] {
    littleEndianBytes(sector) + littleEndianBytes(count) + littleEndianBytes(flags)
}
