package localapi

import "context"

// BGPRoutes is GET /v1/bgp/routes (`weft bgp routes`).
func (c *Client) BGPRoutes(ctx context.Context) (BGPRoutesResponse, error) {
	var resp BGPRoutesResponse
	return resp, c.do(ctx, "GET", "/v1/bgp/routes", nil, &resp)
}
