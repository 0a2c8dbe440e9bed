"""
Update a customer photo using the OnSite API.
"""
import requests

# Customize these to your install.
ONSITE_HOST = '127.0.0.1'
ONSITE_PORT = 9630
ONSITE_USERNAME = 'lightspeed'
ONSITE_PASSWORD = 'admin'
APP_ID = 'com.lightspeed.onsite.demo'
APP_VERSION = '1.0'
APP_PRIVATE_ID = '12345678-90ab-cdef-1234-567890abcdef'

photo_file_path = 'images/sample-photo.jpg'
customer_id = 12
customer_url = 'http://%s:%d/api/customers/%d/' % (ONSITE_HOST, ONSITE_PORT, customer_id)
logout_url = 'http://%s:%d/api/sessions/current/logout/' % (ONSITE_HOST, ONSITE_PORT)

# Load a photo.
with open(photo_file_path, 'rb') as photo:
    # Create a session. This will persist cookies across all requests.
    session = requests.Session()
    session.auth = (ONSITE_USERNAME, ONSITE_PASSWORD)
    session.headers.update({
        'user-agent': '%s/%s' % (APP_ID, APP_VERSION),
        'x-pappid': APP_PRIVATE_ID})
    session.verify = False
    
    # Lock the customer before making the change.
    lock_response = session.request('LOCK', customer_url)
    assert lock_response.status_code == 200
    
    # Send the request to add the customer photo.
    put_response = session.put(customer_url + 'customer_photo/', data=photo)
    assert put_response.status_code == 204
    
    # Unlock the customer after the change is complete.
    unlock_response = session.request('UNLOCK', customer_url)
    assert unlock_response.status_code == 200

    # Log out.
    logout_response = session.post(logout_url)
    assert logout_response.status_code == 204
    
    print("Photo updated.")
