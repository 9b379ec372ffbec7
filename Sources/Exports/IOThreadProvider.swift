import VhostUser

/// The queue-placement protocol lives with the session that asks it (`VhostUser`); this
/// name keeps `import Exports` enough for the daemon that implements it.
public typealias IOThreadProvider = VhostUser.IOThreadProvider
