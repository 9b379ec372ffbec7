/// The kernel's list format for CPU and node sets, as sysfs prints it: "0-3,8,10-11".
///
/// An empty list (a memory-only node's `cpulist`) is valid. The parser also accepts the
/// strided form "0-15:2/4" that `bitmap_parselist` takes as input, so a hand-written mask
/// means the same here as it would to the kernel.
public enum CPUList {
    /// Sanity bound: no kernel supports more CPUs or nodes than this, and it keeps a typo such
    /// as "0-4000000000" from allocating gigabytes.
    public static let maximumID = 1 << 16

    /// Parses a list into its ids, ascending and without duplicates.
    public static func parse(_ text: String) throws(CPUListError) -> [Int] {
        let trimmed = text.trimmingWhitespace()
        if trimmed.isEmpty { return [] }
        var ids = Set<Int>()
        for item in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            try ids.formUnion(parseItem(item.trimmingWhitespace(), in: trimmed))
        }
        return ids.sorted()
    }

    /// Formats ids back into the kernel's compact form: consecutive ids collapse into "A-B",
    /// as the kernel prints them ("0-1,4").
    public static func format<S: Sequence<Int>>(_ ids: S) -> String {
        let sorted = Set(ids).sorted()
        var parts: [String] = []
        var index = 0
        while index < sorted.count {
            var end = index
            while end + 1 < sorted.count && sorted[end + 1] == sorted[end] + 1 { end += 1 }
            parts.append(end == index ? "\(sorted[index])" : "\(sorted[index])-\(sorted[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }

    /// One comma-separated item: "N", "A-B" or "A-B:used/group".
    private static func parseItem(_ item: String, in list: String) throws(CPUListError) -> [Int] {
        if item.isEmpty { throw CPUListError(list: list, problem: "empty item between commas") }
        let rangeAndStride = item.split(separator: ":", omittingEmptySubsequences: false)
        guard rangeAndStride.count <= 2 else {
            throw CPUListError(list: list, problem: "'\(item)' has more than one ':'")
        }
        let bounds = rangeAndStride[0].split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count <= 2 else {
            throw CPUListError(list: list, problem: "'\(item)' is not a number or a range A-B")
        }
        let first = try number(bounds[0], item: item, list: list)
        let last = bounds.count == 2 ? try number(bounds[1], item: item, list: list) : first
        guard first <= last else {
            throw CPUListError(list: list, problem: "range '\(item)' ends before it starts")
        }
        guard rangeAndStride.count == 2 else { return Array(first...last) }

        let stride = rangeAndStride[1].split(separator: "/", omittingEmptySubsequences: false)
        guard bounds.count == 2, stride.count == 2 else {
            throw CPUListError(list: list, problem: "'\(item)' should have the form A-B:used/group")
        }
        let used = try number(stride[0], item: item, list: list)
        let group = try number(stride[1], item: item, list: list)
        guard used >= 1, group >= 1, used <= group else {
            throw CPUListError(list: list, problem: "'\(item)' needs 1 <= used <= group")
        }
        return (first...last).filter { ($0 - first) % group < used }
    }

    private static func number(_ text: Substring, item: String, list: String) throws(CPUListError) -> Int {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text) else {
            throw CPUListError(list: list, problem: "'\(item)' is not a number or a range A-B")
        }
        guard value <= maximumID else {
            throw CPUListError(list: list, problem: "\(value) in '\(item)' exceeds the limit of \(maximumID)")
        }
        return value
    }
}

/// A list that does not follow the kernel's list format.
public struct CPUListError: Error, Equatable, Sendable, CustomStringConvertible {
    public let list: String
    public let problem: String

    public var description: String { "malformed list \"\(list)\": \(problem)" }
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs and newlines (sysfs files end in "\n").
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[start...end])
    }
}
