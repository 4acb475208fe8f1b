package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The fault suite's relay JVMs run under BlockHound, and a violation there is reported in a
 * form {@link FaultRun} fails a scenario on.
 */
class RelayBlockHoundTest {
  @Test
  void aBlockingCallInARelayJvmIsReported() throws IOException {
    Path log = Files.createTempDirectory(Files.createDirectories(Path.of("target")), "blockhound-")
        .resolve("relay.log");
    // No OUTBOX_* variables: RelayMain exits with status 2 after the self-check.
    RelayProcess relay = RelayProcess.start("blockhound-check", Map.of(), log,
        List.of("-Dfaults.blockhound.selfCheck=true"));
    assertThat(relay.awaitExit(60)).as("the relay JVM exits; output:%n%s", relay.output())
        .isTrue();
    assertThat(relay.exitValue()).as(relay.output()).isEqualTo(2);
    assertThat(relay.blockHoundInstalled()).as(relay.output()).isTrue();
    assertThat(relay.reportedBlocking()).as(relay.output()).isTrue();
    assertThat(relay.output()).contains("java.lang.Thread.sleep");
  }
}
