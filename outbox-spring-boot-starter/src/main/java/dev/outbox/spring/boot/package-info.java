/**
 * Spring Boot auto-configuration for Reactive Outbox: {@link
 * dev.outbox.spring.boot.OutboxAutoConfiguration} and its properties, {@link
 * dev.outbox.spring.boot.OutboxProperties} (prefix {@code outbox}). Everything else in this
 * package is internal.
 */
@NullMarked
package dev.outbox.spring.boot;

import org.jspecify.annotations.NullMarked;
