import SpindleOptions
import Testing

@Suite struct ObjectTests {
    @Test func keyvalForms() throws {
        let config = try configuration(["--object", "iothread,id=iot0,cpu=3,poll-max-ns=32768,poll-grow=2,poll-shrink=0",
                                        "--object", "qom-type=iothread,id=iot1"])
        var first = IOThreadObjectOptions(id: "iot0")
        first.cpu = 3
        first.pollMaxNs = 32768
        first.pollGrow = 2
        first.pollShrink = 0
        #expect(config.iothreads == [first, IOThreadObjectOptions(id: "iot1")])
    }

    @Test func json() throws {
        let config = try configuration(["--object", #"{"qom-type":"iothread","id":"iot0","poll-max-ns":100,"cpu":1}"#])
        var expected = IOThreadObjectOptions(id: "iot0")
        expected.pollMaxNs = 100
        expected.cpu = 1
        #expect(config.iothreads == [expected])
    }

    @Test func sleepInPollForProfiling() throws {
        let config = try configuration(["--object", "iothread,id=iot0,x-sleep=poll", "--object", "iothread,id=iot1,x-sleep=io_uring",
                                        "--object", #"{"qom-type":"iothread","id":"iot2","x-sleep":"poll"}"#])
        #expect(config.iothreads.map(\.sleepsInPoll) == [true, false, true])
    }

    @Test func errors() {
        expectError(["--object", "iothread"], "--object: missing required key 'id'")
        expectError(["--object", "id=x"], "missing required key 'qom-type'")
        expectError(["--object", "memory-backend-file,id=m"], "unsupported object type 'memory-backend-file'", "iothread")
        expectError(["--object", "iothread,id=iot0,aio-max-batch=1"], "--object id=iot0: unknown key 'aio-max-batch' (iothread takes:")
        expectError(["--object", "iothread,id=iot0,poll-max-ns=-1"], "invalid number '-1' for 'poll-max-ns'")
        expectError(["--object", "iothread,id=iot0,poll-max-ns=9223372036854775808"], "must be from 0 to 9223372036854775807")
        expectError(["--object", "iothread,id=iot0,cpu=x"], "invalid number 'x' for 'cpu'")
        expectError(["--object", #"{"qom-type":"iothread","id":"iot0","cpu":true}"#], "'cpu' must be a number, not a boolean")
        expectError(["--object", "iothread,id=iot0", "--object", "iothread,id=iot0"], "object id 'iot0' is already used")
        expectError(["--object", "iothread,id="], "invalid id ''")
        expectError(["--object", "iothread,id=iot0,x-sleep=never"], "invalid value 'never' for 'x-sleep' (use")
    }
}
