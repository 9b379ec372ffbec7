import ControlThread
import SpindleOptions

/// Starts one QMP server per `--monitor` / `--qmp` of the configuration, all serving `target`.
/// If one fails to start, the ones already started are closed again. Monitors whose chardev
/// says `wait=on` are returned too; await `waitForFirstClient()` on them before going on, as
/// QEMU blocks startup until such a monitor has a client.
@ControlActor
public func startMonitors(configuration: DaemonConfiguration, target: any MonitorCommandTarget) throws(QMPServerError) -> [QMPServer] {
    var servers: [QMPServer] = []
    for monitor in configuration.monitors {
        do {
            servers.append(try QMPServer(path: monitor.chardev.path, target: target, pretty: monitor.pretty))
        } catch {
            for server in servers { server.close() }
            let name = monitor.chardev.id.hasPrefix("#") ? "--qmp \(monitor.chardev.path)" : "--chardev id=\(monitor.chardev.id)"
            throw QMPServerError("\(name): \(error.description)")
        }
    }
    return servers
}
