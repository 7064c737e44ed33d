# Multi-stage build of the Backstop binaries into a small runtime image.
#   docker build -t backstop .
#   docker run --rm -p 8080:8080 -v /etc/backstop:/etc/backstop:ro \
#     -e BACKSTOP_DATABASE_URL=postgres://... -e BACKSTOP_SECRET_KEY_FILE=/etc/backstop/secret.key \
#     -e BACKSTOP_TLS_CERT=/etc/backstop/tls/server.pem -e BACKSTOP_TLS_KEY=/etc/backstop/tls/server-key.pem \
#     -e BACKSTOP_TLS_CA=/etc/backstop/tls/ca.pem backstop
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/backstopd ./cmd/backstopctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/backstopd /out/backstopctl /usr/local/bin/
ENV BACKSTOP_LISTEN=0.0.0.0:8080 BACKSTOP_LOG_FORMAT=json
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/backstopd"]
