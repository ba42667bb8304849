import Engine
import WireGuard

/// The control plane of one running gateway.
public enum GatewayModule {}
