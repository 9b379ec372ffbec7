import Placement
import Testing

@Suite struct CPUListTests {
    @Test func parsesTheKernelFormat() throws {
        #expect(try CPUList.parse("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11])
        #expect(try CPUList.parse("5") == [5])
        #expect(try CPUList.parse("  0-1 \n") == [0, 1])
    }

    @Test func emptyListIsValid() throws {
        #expect(try CPUList.parse("") == [])
        #expect(try CPUList.parse("\n") == [])
    }

    @Test func sortsAndDeduplicates() throws {
        #expect(try CPUList.parse("8,0-2,1") == [0, 1, 2, 8])
    }

    @Test func acceptsStridedRanges() throws {
        #expect(try CPUList.parse("0-15:2/4") == [0, 1, 4, 5, 8, 9, 12, 13])
    }

    @Test(arguments: [
        ("3-1", "ends before it starts"),
        ("1,,2", "empty item"),
        ("a", "not a number"),
        ("1-2-3", "not a number or a range"),
        ("-1", "not a number"),
        ("0-", "not a number"),
        ("0-7:0/4", "1 <= used <= group"),
        ("3:1/2", "A-B:used/group"),
        ("0-99999999", "exceeds the limit"),
    ])
    func rejectsMalformedLists(text: String, fragment: String) {
        let error = thrownError(CPUListError.self) { _ = try CPUList.parse(text) }
        #expect(error?.description.contains(fragment) == true, "\(String(describing: error))")
        #expect(error?.description.contains("\"\(text)\"") == true)
    }

    @Test func formatsCompactly() {
        #expect(CPUList.format([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11")
        #expect(CPUList.format([4, 0, 1]) == "0-1,4")
        #expect(CPUList.format([]) == "")
    }
}
