/**
 * Spring transaction interop for {@link dev.outbox.r2dbc.OutboxWriter}: {@link
 * dev.outbox.spring.SpringTransactionConnectionResolver} lets the writer join the reactive
 * transaction that Spring manages ({@code TransactionalOperator}, or {@code @Transactional} on a
 * method returning {@code Mono} or {@code Flux}, with {@code R2dbcTransactionManager}), so the
 * outbox row commits or rolls back with the business rows, on the same connection, without
 * binding the connection by hand.
 *
 * <pre>{@code
 * OutboxWriter writer = OutboxWriter.builder()
 *     .connectionResolver(SpringTransactionConnectionResolver.create(connectionFactory))
 *     .build();
 *
 * @Transactional                                   // R2dbcTransactionManager(connectionFactory)
 * public Mono<Void> placeOrder(Order order) {
 *   return orders.save(order).then(writer.write(orderPlaced(order)));
 * }
 * }</pre>
 *
 * <p>This module is the only part of the library that depends on Spring ({@code spring-tx} and
 * {@code spring-r2dbc}); {@code outbox-r2dbc} does not, so applications without Spring leave it
 * out.
 *
 * <p><b>Limitation:</b> give the resolver the very {@code ConnectionFactory} instance the
 * transaction manager uses (typically the {@code ConnectionFactory} bean). Spring binds the
 * transaction's connection under that object; another instance, even over the same database,
 * finds nothing and the write fails with {@link dev.outbox.r2dbc.MissingConnectionException}.
 *
 * <p>Everything here is immutable, thread-safe, non-blocking and null-marked: parameters and
 * results are non-null unless annotated {@link org.jspecify.annotations.Nullable}.
 */
@NullMarked
package dev.outbox.spring;

import org.jspecify.annotations.NullMarked;
