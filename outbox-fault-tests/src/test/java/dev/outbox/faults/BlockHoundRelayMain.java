package dev.outbox.faults;

import dev.outbox.relay.standalone.RelayMain;
import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import reactor.blockhound.BlockHound;
import reactor.blockhound.BlockingOperationError;
import reactor.core.publisher.Mono;

/**
 * The entry point of the fault suite's relay JVMs: installs BlockHound (with every {@code
 * BlockHoundIntegration} on the class path, as the test JVMs do), then runs {@link RelayMain}.
 *
 * <p>A blocking call on a non-blocking thread fails that call with {@link
 * BlockingOperationError}, as in the test JVMs, and is also printed, with its stack, after a
 * line starting with {@value #VIOLATION} (by a separate thread, so that reporting never blocks
 * the offending thread): {@link FaultRun} fails the scenario when a relay's output holds one.
 * {@value #INSTALLED} is printed once BlockHound is in place. With {@code
 * -Dfaults.blockhound.selfCheck=true} the JVM first blocks on a parallel thread on purpose, to
 * show that this works.
 */
public final class BlockHoundRelayMain {
  static final String VIOLATION = "BLOCKHOUND VIOLATION";
  static final String INSTALLED = "BLOCKHOUND INSTALLED in the relay JVM";

  private static final BlockingQueue<Error> violations = new LinkedBlockingQueue<>();

  private BlockHoundRelayMain() {}

  public static void main(String[] args) throws Exception {
    Thread reporter = new Thread(BlockHoundRelayMain::report, "blockhound-reporter");
    reporter.setDaemon(true);
    reporter.start();
    BlockHound.install(builder -> builder.blockingMethodCallback(method -> {
      BlockingOperationError error = new BlockingOperationError(method);
      violations.offer(error);
      throw error;
    }));
    System.out.println(INSTALLED);
    if (Boolean.getBoolean("faults.blockhound.selfCheck")) {
      Mono.delay(Duration.ofMillis(1))
          .doOnNext(tick -> {
            try {
              Thread.sleep(1);
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
          })
          .onErrorResume(e -> Mono.empty())
          .block(Duration.ofSeconds(10));
    }
    RelayMain.main(args);
  }

  private static void report() {
    while (true) {
      try {
        Error error = violations.take();
        synchronized (System.out) {
          System.out.println(VIOLATION + " on thread: " + error.getMessage());
          error.printStackTrace(System.out);
          System.out.flush();
        }
      } catch (InterruptedException e) {
        return;
      }
    }
  }
}
