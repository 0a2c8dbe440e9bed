"""
Search customers using the OnSite API.
"""
import requests
from xml.dom import minidom

# Customize these to your install.
ONSITE_HOST = '127.0.0.1'
ONSITE_PORT = 9630
ONSITE_USERNAME = 'lightspeed'
ONSITE_PASSWORD = 'admin'
APP_ID = 'com.lightspeed.onsite.demo'
APP_VERSION = '1.0'
APP_PRIVATE_ID = '12345678-90ab-cdef-1234-567890abcdef'

customer_search_url = 'http://%s:%d/api/customers/search/' % (ONSITE_HOST, ONSITE_PORT)
logout_url = 'http://%s:%d/api/sessions/current/logout/' % (ONSITE_HOST, ONSITE_PORT)

# This is the search information.
search_xml = """
<search>
    <page>
        <offset>0</offset>
        <count>5</count>
    </page>
    <search_query>
        <columns>
            <column id="lsserver.search.column.id"/>
            <column id="lsserver.search.column.name"/>
            <column id="lsserver.search.column.phone"/>
            <column id="lsserver.search.column.city"/>
        </columns>
        <sort_by_column>
            <column id="lsserver.search.column.name"/>
            <order_by>ASC</order_by>
        </sort_by_column>
        <filters>lsserver.search.filters.name CONTAINS 'Smith'</filters>
    </search_query>
</search>
"""

# Create a session. This will persist cookies across all requests.
session = requests.Session()
session.auth = (ONSITE_USERNAME, ONSITE_PASSWORD)
session.headers.update({
    'user-agent': '%s/%s' % (APP_ID, APP_VERSION),
    'x-pappid': APP_PRIVATE_ID})
session.verify = False

# Send the request to search the customers.
post_response = session.post(customer_search_url, data=search_xml)
assert post_response.status_code == 200

# Log out.
logout_response = session.post(logout_url)
assert logout_response.status_code == 204

# Print the search results.
response_xml = minidom.parseString(post_response.text)
print(response_xml.toprettyxml())
