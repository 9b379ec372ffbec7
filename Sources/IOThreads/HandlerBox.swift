/// A registered completion handler as an IOThread's handler table holds it: the table keeps
/// an `Unmanaged` reference to the box (retained at register, released after unregister), and
/// dispatch borrows the box's immutable `handler`, so no CQE or end-of-batch call retains
/// the handler (loading an existential from the table retained and released it each time).
final class HandlerBox {
    let handler: any IOCompletionHandler
    init(_ handler: any IOCompletionHandler) { self.handler = handler }
}
