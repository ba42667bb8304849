import Gateway
import Logging

/// Sends every log line of this process through `Log.StandardErrorHandler` at `level`.
/// Once per process (swift-log refuses a second bootstrap) and before anything logs: the
/// logger is created on first use and keeps the handler it was created with.
func bootstrapLogging(level: Log.Level) {
    LoggingSystem.bootstrap { _ in Log.StandardErrorHandler(logLevel: level) }
}
