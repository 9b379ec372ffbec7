/// Parses sizes the way QEMU does: a number with an optional suffix k, M, G, T, P, E (powers of 1024)
/// or b/B for bytes. Returns nil on anything else, including overflow.
public func parseByteSize(_ text: String) -> UInt64? {
    var digits = Substring(text)
    var multiplier: UInt64 = 1
    if let last = digits.last, !last.isNumber {
        switch last {
        case "b", "B": multiplier = 1
        case "k", "K": multiplier = 1 << 10
        case "m", "M": multiplier = 1 << 20
        case "g", "G": multiplier = 1 << 30
        case "t", "T": multiplier = 1 << 40
        case "p", "P": multiplier = 1 << 50
        case "e", "E": multiplier = 1 << 60
        default: return nil
        }
        digits = digits.dropLast()
    }
    guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = UInt64(digits) else { return nil }
    let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : product
}
