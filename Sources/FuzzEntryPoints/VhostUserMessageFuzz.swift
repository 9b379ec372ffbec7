#if canImport(Glibc)
import Glibc
#endif
import CSpindle
import VhostUser

/// Input: byte 0 = how many fds travel with the first bytes (0–9; more than a message may
/// carry is a protocol error), then the byte stream a frontend sends. The stream goes
/// through a real socketpair into `VhostUserMessageReader`, and every complete message
/// through `VhostUserRequest.decode`. Checks that no fd leaks, whatever happens.
func fuzzVhostUserMessage(_ input: UnsafeRawBufferPointer) {
    var bytes = FuzzBytes(input)
    let fdCount = Int(bytes.u8() % 10)
    let stream = UnsafeRawBufferPointer(rebasing: bytes.rest().prefix(48 * 1024))

    let lowestFreeFD = probeLowestFreeFD()
    let openBefore = openFDs(from: lowestFreeFD)
    var pair: [Int32] = [-1, -1]
    let made = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair)
    precondition(made == 0, "socketpair failed: errno \(errno)")
    let (receiver, sender) = (pair[0], pair[1])

    var bufferSize: Int32 = 256 * 1024
    _ = setsockopt(sender, SOL_SOCKET, SO_SNDBUF, &bufferSize, socklen_t(MemoryLayout<Int32>.size))
    _ = fcntl(receiver, F_SETFL, fcntl(receiver, F_GETFL) | O_NONBLOCK)

    // Any fd will do as a passenger: the decoder never uses them, only keeps or closes them.
    var passengers: [Int32] = []
    if let start = stream.baseAddress, !stream.isEmpty {
        for _ in 0..<fdCount { passengers.append(eventfd(0, Int32(EFD_CLOEXEC))) }
        let sent = passengers.withUnsafeBufferPointer { fds in
            spindle_send_with_fds(sender, start, stream.count, fds.baseAddress, Int32(fds.count))
        }
        precondition(sent == stream.count, "sending the stream failed: \(sent)")
    }
    for fd in passengers { close(fd) }
    shutdown(sender, Int32(SHUT_WR))

    do {
        let reader = VhostUserMessageReader(socket: receiver)
        var ended = false
        while !ended {
            let result = reader.readAvailable()
            for message in result.messages {
                precondition(message.payload.count == Int(message.header.size), "payload size disagrees with the header")
                if let request = try? VhostUserRequest.decode(message) {
                    request.closeFileDescriptors()
                }
            }
            ended = result.end != nil
        }
    }
    close(receiver)
    close(sender)
    precondition(probeLowestFreeFD() == lowestFreeFD, "a file descriptor leaked")
    precondition(openFDs(from: lowestFreeFD) == openBefore, "a file descriptor leaked")
}

/// The number the next open fd would get.
func probeLowestFreeFD() -> Int32 {
    let fd = dup(0)
    if fd >= 0 { close(fd) }
    return fd
}

/// Which of the 32 fds from `start` on are open (the process may hold some above the lowest free one).
func openFDs(from start: Int32) -> [Int32] {
    (start..<(start + 32)).filter { fcntl($0, F_GETFD) != -1 }
}
