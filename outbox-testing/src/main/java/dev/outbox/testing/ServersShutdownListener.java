package dev.outbox.testing;

import org.junit.platform.launcher.LauncherSession;
import org.junit.platform.launcher.LauncherSessionListener;

/**
 * Stops the embedded Kafka broker when the test run ends, before the JVM's shutdown hooks run:
 * a broker still running while shutdown hooks delete its directory can halt the JVM with status
 * 1, which Maven reports as a crashed fork even though every test passed.
 */
public final class ServersShutdownListener implements LauncherSessionListener {
  @Override
  public void launcherSessionClosed(LauncherSession session) {
    TestKafka.closeIfStarted();
  }
}
