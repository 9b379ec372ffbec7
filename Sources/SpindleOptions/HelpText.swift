/// The `--help` text: every option and key Spindle accepts, with defaults.
public let spindleHelpText = """
Usage: spindle [options]
Spindle: a vhost-user-blk storage daemon, compatible with qemu-storage-daemon

  -h, --help             display this help and exit
  -V, --version          output version information and exit

  --blockdev [driver=]file,node-name=<name>,filename=<path>
             [,aio=io_uring|threads|native][,cache.direct=on|off]
             [,cache.no-flush=on|off][,read-only=on|off]
             [,locking=on|off|auto][,discard=ignore|unmap]
                         open an image file or block device as node <name>
                         aio: Spindle always uses io_uring; threads and native
                           are accepted and noted (default io_uring)
                         cache.direct: O_DIRECT, bypass the page cache (default off)
                         cache.no-flush: ignore flushes, unsafe (default off)
                         read-only (default off), locking (default on)
                         discard=unmap passes guest discards on (default ignore)
                         auto-read-only: open read-only if writing is not
                           allowed (default off)
  --blockdev [driver=]null-co,node-name=<name>[,size=<bytes>]
             [,read-zeroes=on|off][,read-only=on|off]
                         a node that discards writes, for testing
                         size: virtual size, k/M/G/T suffixes allowed (default 1G)
                         read-zeroes: reads return zeroes (default off)
  --blockdev driver=rbd,node-name=<name>,pool=<pool>,image=<image>
             [,namespace=<ns>][,snapshot=<snap>][,conf=<ceph.conf>][,user=<id>]
             [,key-secret=<secret-id>][,server.0.host=<h>,server.0.port=<p>...]
             [,auth-client-required.0=cephx|none][,read-only=on|off]
             [,discard=ignore|unmap]
                         a Ceph RBD image (librbd1, loaded at run time; without
                           it only rbd nodes fail, with a message)
                         snapshot: open the image as of the snapshot, read-only
                         conf: a ceph.conf (default: librados' search, if any)
                         user: the cephx user without "client." (default admin)
                         key-secret: an --object secret with the user's key
                         server: monitors, joined into mon_host (in JSON a list
                           of {"host","port"})
                         a monitor that does not answer or a wrong key fails the
                           node within 5 s; all of a node's queues run on one
                           IOThread (the first queue's)
  Both drivers also take force-share=on (no image locks; read-only nodes only)
  and detect-zeroes=off (the only value Spindle supports), as libvirt sends.
  Every driver (x-delay too) takes active=on|off (default on): off opens the
  node inactive, taking no permissions or image locks, so that another process
  (a migration's source) keeps the image until QMP blockdev-set-active.
  For rbd the image lock is RBD's exclusive lock, held while active and
  written; a resize made elsewhere (rbd resize) reaches the guest. The lock of
  this daemon's predecessor killed on this host (image metadata
  spindle.lock-holder names it, its pid is gone) is broken at once and its
  client blocklisted. At start-up a writable --export whose rbd image another
  client still locks (another live daemon, or a dead client Ceph has not
  expired yet) waits: it listens, its requests wait, the lock is retried every
  second.

  --blockdev driver=x-delay,node-name=<name>,file=<node>[,hold-every=<n>]
             [,hold-ms=<ms>][,fail-every=<n>][,fail-errno=<errno>]
                         FOR TESTS: a filter over node <node> (defined before)
                         hold-every: hold every nth completion back (default 0,
                           none), for hold-ms milliseconds (default 50), so that
                           completions go out of order
                         fail-every: fail every nth request without passing it
                           on (default 0, none), with fail-errno: EIO (default),
                           ENOSPC, EINVAL, ENOMEM, EROFS, EPERM, EACCES,
                           ETIMEDOUT, ENOTSUP or EDQUOT

  --blockdev driver=throttle,node-name=<name>,throttle-group=<id>,file=<node>
                         I/O limits: a filter over node <node> (defined before)
                           whose reads and writes share the limits of
                           --object throttle-group <id> with every other
                           throttle node of that group; over the limit they
                           wait in order (flushes are not limited)

  --blockdev driver=qcow2,node-name=<name>,file=<node>[,read-only=on]
             [,backing=<node>|null][,l2-cache-size=<bytes>]
                         a qcow2 image in file node <node> (or, in JSON, an
                           inline "file": {"driver": "file", "filename": ...};
                           keyval file.driver=file,file.filename=<path>)
                         read-write unless read-only=on (auto-read-only=on
                           means read-only); dirty or corrupt images and images
                           with internal snapshots open read-only only
                         backing: a qcow2 or file node under the image, or null
                           for none (default: the chain the image's header
                           names, opened read-only, each layer a node named
                           #block<n>, closed with this node)
                         l2-cache-size: L2 table cache (default: the whole
                           image's tables, at most 32M)

  --chardev socket,id=<id>,path=<socket-path>,server=on[,wait=on|off]
                         a UNIX socket for a QMP monitor (--monitor);
                         wait=on (the default, as QEMU) blocks startup until a
                         client connects

  --export [type=]vhost-user-blk,id=<id>,node-name=<name>,
           addr.type=unix,addr.path=<socket-path>[,writable=on|off]
           [,writethrough=on|off][,num-queues=<n>]
           [,logical-block-size=<size>][,serial=<serial>]
           [,iothread=<iothread-id>|iothread.0=<id>,iothread.1=<id>...]
           [,fixed-iothread=on|off][,x-inflight=on|off][,allow-inactive=on|off]
           [,x-dirty-log=marked|unmarked][,packed-ring=on|off]
                         export node <name> as a vhost-user-blk device on a
                         UNIX domain socket
                         writable: let the guest write (default off; the node
                           must not be read-only)
                         writethrough: report no write cache and make each
                           write durable before completing it (default off)
                         num-queues: 1 to 16 (default 16, so that QEMU's
                           default of one queue per vCPU always fits)
                         logical-block-size: a power of two from 512 to 2M
                           (default 512)
                         serial: up to 20 bytes, reported to the guest as the
                           device ID (default none)
                         iothread: an --object iothread defined earlier that
                           serves every queue, or a list of them (queues go
                           round-robin); in JSON also QEMU's
                           "iothread-vq-mapping": [{"iothread": ID, "vqs": [N..]}]
                           (default: automatic NUMA-aware placement, one pinned
                           IOThread per CPU, least-loaded CPU of the ring's node)
                         fixed-iothread: accepted for compatibility, no effect
                         allow-inactive: the node may be inactive; guest
                           requests then wait until it is activated (default
                           off: the export activates its node, and the node
                           cannot be inactivated while the export exists)
                         packed-ring: offer packed virtqueues (VIRTIO 1.1,
                           QEMU's packed=on) besides split ones, with the same
                           inflight tracking across daemon restarts (default
                           on; off withholds them: guests use split rings)
                         x-inflight: FOR TESTS, off withholds the inflight
                           region (INFLIGHT_SHMFD) from the frontend (default on)
                         x-dirty-log: FOR TESTS, unmarked offers dirty logging
                           for migration but marks no page (default marked)

  --metrics addr.type=inet,addr.host=<host>,addr.port=<port>
  --metrics addr.type=unix,addr.path=<socket-path>
                         serve Prometheus metrics (GET /metrics, text format
                           0.0.4) over HTTP: IOThreads, exports, nodes, jobs;
                           sampled at each scrape (default: no endpoint)
                         host: an address or name; 127.0.0.1 serves this host
                           only (the endpoint has no authentication)

  --monitor [chardev=]<id>[,id=<monitor-id>][,mode=control][,pretty=on|off]
                         run a QMP monitor on --chardev <id>
                         pretty: indent responses (default off)
  --qmp <socket-path>    shorthand for --chardev socket,path=<socket-path>,
                         server=on,wait=off plus --monitor on it
                         QMP commands: qsd's block and export commands, plus
                           block jobs: blockdev-mirror (sync=full|top, move of
                           a disk to a new image, pivot on job-complete),
                           query-jobs, job-pause, job-resume, job-cancel,
                           job-complete, job-finalize, job-dismiss (README);
                           I/O limits: qom-get/qom-set of a throttle group's
                           limits, block_set_io_throttle (README)
                           images: blockdev-create (file, qcow2; a job),
                           blockdev-snapshot, blockdev-snapshot-sync (README)
                           block-commit (qcow2 layers added as nodes into
                           their base; the active layer ends READY and pivots on
                           job-complete or block-job-complete) (README)
                           block-stream (pull a qcow2 chain into its top node
                           while the guest runs; a job) (README)
                           block-job-set-speed (a running job's speed limit),
                           query-block-jobs,
                           blockdev-reopen (read-only/read-write of file and
                           qcow2 nodes while they run) (README)
                           job-complete, job-finalize, job-dismiss (README)
                         statistics: query-blockstats (QEMU's shape: one entry
                           per export, per-queue figures in x-queues; query-nodes
                           for one per node; x-latency-histograms) (README)

  --object [qom-type=]iothread,id=<id>[,cpu=<n>][,poll-max-ns=<ns>]
           [,poll-grow=<n>][,poll-shrink=<n>][,x-sleep=io_uring|poll]
                         create an I/O thread for --export iothread=<id>
                         cpu: pin the thread to host CPU <n> (default unpinned)
                         poll-max-ns: busy-poll the queues for up to this long
                           before sleeping, adaptively as QEMU (default 100000;
                           0 disables); poll-grow, poll-shrink: how the window
                           grows and shrinks (default 2 and reset to 0)
                           (no polling while rbd requests are in flight)
                         x-sleep=poll: sleep in poll(2), not io_uring_enter
                           (for profiling under valgrind only)
  --object [qom-type=]throttle-group,id=<id>[,limits.<limit>=<n>...]
                         I/O limits shared by the throttle nodes of group <id>
                           (QEMU's names; also x-<limit>=<n>); <limit> is
                           iops-total, iops-read, iops-write (operations/s),
                           bps-total, bps-read, bps-write (bytes/s), each with
                           -max (burst rate) and -max-length (seconds of burst,
                           default 1), and iops-size (larger requests count as
                           several operations); 0 or absent: no limit.
                           Changed at run time with QMP qom-set (README)

  --object [qom-type=]secret,id=<id>,data=<text>|file=<path>[,format=raw|base64]
                         a secret (an rbd key-secret), as QEMU's; format=base64
                           decodes it (a Ceph key file is base64); never shown
                           in logs or query output; a secret an rbd node uses
                           cannot be deleted (object-del)

  --pidfile <path>       write process ID to a file after startup
  --state-file <path>    record every change made over QMP (nodes, exports,
                           objects, limits) in <path>, atomically, before the
                           reply; at startup replay it after the command line,
                           so a restarted daemon serves the same exports. An
                           unreadable, corrupt or inapplicable file stops the
                           start; <path>.bak holds the previous generation
                           (README: "State file and systemd")

Under systemd (Type=notify) spindle sends READY=1 once every export listens
and STOPPING=1 at shutdown; with stderr on the journal, log lines carry
syslog priorities. See packaging/systemd/.

A --blockdev, --export, --object, --monitor or --metrics value may be a JSON
object, e.g.
  --blockdev '{"driver":"file","node-name":"disk0","filename":"disk.img",
               "cache":{"direct":true}}'
In key=value form, write a comma inside a value as ",,"; booleans are
on/off (also yes/no, true/false); options are processed in order, so define
nodes, iothreads and chardevs before the options that use them.

Not yet implemented (refused with an error): --daemonize.

Example:
  spindle --object iothread,id=iot0 \\
      --blockdev driver=file,node-name=disk0,filename=disk.img,cache.direct=on \\
      --export vhost-user-blk,id=exp0,node-name=disk0,iothread=iot0,writable=on,addr.type=unix,addr.path=/run/exp0.sock \\
      --qmp /run/spindle-qmp.sock
"""
