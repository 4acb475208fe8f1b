package dev.outbox.r2dbc;

import io.r2dbc.spi.Connection;
import reactor.core.publisher.Mono;
import reactor.util.context.ContextView;

/**
 * SPI: finds the connection of the current transaction when it was not bound with {@link
 * OutboxContext#withConnection}, for example the one a framework's transaction manager keeps in
 * its own Context entry. The writer asks resolvers, in the order configured, after its own key.
 *
 * <p>Implementations must not block and must complete empty when they find nothing.
 */
@FunctionalInterface
public interface ConnectionResolver {
  Mono<Connection> resolve(ContextView context);
}
