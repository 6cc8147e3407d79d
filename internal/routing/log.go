package routing

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/logx"
)

// SetClientLogger sends the Redis client library's own messages (such as
// "failed to dial" while Redis is down) to log at debug level, at most one
// every 10 seconds, instead of the process's standard error. The client
// library's logger is process-wide, so only main calls this.
func SetClientLogger(log *slog.Logger) {
	redis.SetLogger(clientLogger{log: log, limit: logx.NewLimiter(10 * time.Second)})
}

type clientLogger struct {
	log   *slog.Logger
	limit *logx.Limiter
}

func (l clientLogger) Printf(ctx context.Context, format string, v ...any) {
	if ok, n := l.limit.Allow(); ok {
		l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...), "suppressed_since_last", n)
	}
}
