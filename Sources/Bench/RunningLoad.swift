import Engine
import Foundation
import Gateway
import Lab
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// A load running on its own thread: how much it sent so far (when its generator can tell
/// mid-blast), and how to stop it.
struct RunningLoad {
    let thread: NamespaceThread<BlastResult>
    /// Frames sent so far; nil when the generator counts only at the end.
    let sent: () throws -> UInt64?

    init(_ thread: NamespaceThread<BlastResult>, sent: @escaping () throws -> UInt64? = { nil }) {
        self.thread = thread
        self.sent = sent
    }

    /// Asks the generator to stop and waits for its result.
    func stop() throws -> BlastResult {
        thread.requestStop()
        return try thread.join()
    }
}

extension PoolBlaster {
    /// A blast that can be read mid-way (see `start(_:frames:rate:)`).
    func startLoad(_ mode: BlastMode, rate: Double?) throws -> RunningLoad {
        RunningLoad(try start(mode, frames: nil, rate: rate)) { try self.framesSent() }
    }
}

/// What the encrypt direction's generators have in common.
protocol PlainGenerator {
    func run(_ mode: BlastMode) throws -> BlastResult
    func start(_ mode: BlastMode) throws(LoadError) -> NamespaceThread<BlastResult>
    /// A load of `seconds` at most (stopped earlier by the runner).
    func startLoad(seconds: Double) throws -> RunningLoad
}

extension DatagramBlaster: PlainGenerator {
    func startLoad(seconds: Double) throws -> RunningLoad { RunningLoad(try start(.duration(seconds: seconds))) }
}

/// A pool blaster of plain packets, cycled.
struct PlainFrames: PlainGenerator {
    let blaster: any PoolBlaster
    func run(_ mode: BlastMode) throws -> BlastResult { try blaster.run(mode, frames: nil) }
    func start(_ mode: BlastMode) throws(LoadError) -> NamespaceThread<BlastResult> {
        try blaster.start(mode, frames: nil, rate: nil)
    }
    func startLoad(seconds: Double) throws -> RunningLoad { try blaster.startLoad(.duration(seconds: seconds), rate: nil) }
}
