package bgpbench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftnet/weft/internal/bgptest"
	"github.com/weftnet/weft/internal/testbed"
)

// The scale benchmark's peers: this test binary started again inside the
// site's router namespace with envPeers set runs that many gobgp speakers
// (one per address) peering with the node at envNode, the first announcing
// envPrefixes /32s, until it is killed.
const (
	envPeers    = "WEFT_BENCH_BGP_PEERS"
	envNode     = "WEFT_BENCH_BGP_NODE"
	envPrefixes = "WEFT_BENCH_BGP_PREFIXES"
)

func TestMain(m *testing.M) {
	if addrs := os.Getenv(envPeers); addrs != "" {
		if err := runPeers(strings.Split(addrs, ","), os.Getenv(envNode), os.Getenv(envPrefixes)); err != nil {
			fmt.Fprintln(os.Stderr, "bench peers:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testbed.Main(m)
}

type quiet struct{}

func (quiet) Panic(string, gobgplog.Fields) {}
func (quiet) Fatal(string, gobgplog.Fields) {}
func (quiet) Error(string, gobgplog.Fields) {}
func (quiet) Warn(string, gobgplog.Fields)  {}
func (quiet) Info(string, gobgplog.Fields)  {}
func (quiet) Debug(string, gobgplog.Fields) {}
func (quiet) SetLevel(gobgplog.LogLevel)    {}
func (quiet) GetLevel() gobgplog.LogLevel   { return gobgplog.ErrorLevel }
func family() *api.Family                   { return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST} }
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// runPeers runs one gobgp speaker per address, each a passive iBGP peer of
// node (AS bgptest.NodeAS, like a mesh peer), until SIGTERM.
func runPeers(addrs []string, node, prefixes string) error {
	n, _ := strconv.Atoi(prefixes)
	ctx := context.Background()
	for i, a := range addrs {
		s := server.NewBgpServer(server.LoggerOption(quiet{}))
		go s.Serve()
		if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: bgptest.NodeAS, RouterId: a, ListenPort: 179, ListenAddresses: []string{a}}}); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
		err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:            &api.PeerConf{NeighborAddress: node, PeerAsn: bgptest.NodeAS},
			Timers:          &api.Timers{Config: &api.TimersConfig{HoldTime: 3, KeepaliveInterval: 1, ConnectRetry: 1}},
			Transport:       &api.Transport{LocalAddress: a, PassiveMode: true},
			GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: 120},
			AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family(), Enabled: true},
				MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}}},
		}})
		if err != nil {
			return fmt.Errorf("%s: add peer: %w", a, err)
		}
		if i == 0 && n > 0 {
			origin := must(anypb.New(&api.OriginAttribute{Origin: 0}))
			nh := must(anypb.New(&api.NextHopAttribute{NextHop: a}))
			for _, p := range bgptest.FloodPrefixes(n) {
				nlri := must(anypb.New(&api.IPAddressPrefix{Prefix: strings.TrimSuffix(p, "/32"), PrefixLen: 32}))
				if _, err := s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL,
					Path: &api.Path{Family: family(), Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}}); err != nil {
					return err
				}
			}
		}
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}
