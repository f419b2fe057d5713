/* version — the release this source builds: `outboxd --version` and
 * outboxd_build_info{version=} on /metrics. */
#ifndef OUTBOXD_VERSION_H
#define OUTBOXD_VERSION_H

#define OUTBOXD_VERSION "0.1.0"

#endif
